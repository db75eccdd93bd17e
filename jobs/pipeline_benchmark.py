"""What the pipeline costs on top of the bare codec (`python -m jobs.benchmark --pipeline`).

The RD benchmark says how good a codec is; this one says how much of its speed survives the
pipeline around it (tar reading, source decode, hashes, Parquet, Ray), how much memory a worker
needs as shards grow, and how many bytes a row costs beyond its bitstream. All of it in one run,
on the same images, so the ratios between the figures hold on a noisy machine.

1. Throughput: ``compress`` and ``restore`` through the real functions on in-process Ray (local
   files), against the bare codec in a plain driver loop (``encode_batch`` + ``decode_batch`` +
   PSNR, batches of the pipeline's chunk size). Efficiency = pipeline images/s / bare images/s.
2. Peak RSS per worker: a driver thread samples the RSS of every Ray actor process (children
   of this process whose title says ``ray::CompressWorker`` or ``ray::RestoreWorker``) with
   psutil, and reads the kernel's peak (``VmHWM``) of each; once with small shards, once with
   big shards whose decoded pixels are at least 3x a stated per-worker budget (built by
   repeating the images).
3. Bytes per row beyond the bitstream and the kept members, after Parquet compression.
4. 1 vs 2 actors (``RayOptions.actors``).

The same N images (the folder's images repeated in order) are packed twice: small shards and
big shards. Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"
DEFAULT_OUT = Path("benchmarks") / "pipeline"
MIB = 1 << 20


# ----------------------------------------------------------------------------- inputs


@dataclass
class Image:
    name: str
    suffix: str
    data: bytes  # the original file
    pixels: np.ndarray  # uint8 HxWx3, as pipeline.images.prepare gives it to the codec


def load_images(directory: Path) -> list[Image]:
    """The folder's images, decoded the way the pipeline decodes them (so the bare loop codes
    exactly the arrays the workers code)."""
    from jobs.benchmark import IMAGE_SUFFIXES
    from pipeline.images import prepare

    if not directory.is_dir():
        raise SystemExit(
            f"pipeline benchmark: image folder {directory} is missing. The default is "
            f"../shared/datasets/kodak (beside the repository); pass --images DIR."
        )
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"pipeline benchmark: no images "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    out = []
    for p in files:
        data = p.read_bytes()
        out.append(Image(p.stem, p.suffix[1:].lower(), data, prepare(data, 1 << 40)[0]))
    return out


@dataclass
class Item:
    key: str
    file: str
    copy: int
    suffix: str
    data: bytes
    pixel_bytes: int


def sequence(images: list[Image], n: int) -> list[Item]:
    """``n`` images: the folder's images in order, repeated. Copy 0 is the original file; copy
    k > 0 is the image circularly shifted by (5k, 7k) pixels and saved as PNG, so that no two
    rows share a bitstream or a hash: identical rows would let Parquet's dictionary encoding
    and zstd store a repeat for almost nothing, and the byte figures would be fiction."""
    from PIL import Image as PILImage

    out = []
    for i in range(n):
        copy, im = divmod(i, len(images))[0], images[i % len(images)]
        suffix, data = im.suffix, im.data
        if copy:
            buf = io.BytesIO()
            shifted = np.roll(im.pixels, (5 * copy, 7 * copy), axis=(0, 1))
            PILImage.fromarray(shifted).save(buf, format="PNG")
            suffix, data = "png", buf.getvalue()
        out.append(Item(f"{i:06d}-{im.name}", f"{im.name}.{im.suffix}", copy, suffix, data,
                        im.pixels.size))
    return out


def write_layout(seq: list[Item], rows: int, directory: Path) -> list[int]:
    """``seq`` as shards of ``rows`` samples each (image member + a small .json member that
    the archive keeps). Returns decoded pixel bytes per shard."""
    from pipeline.tars import Sample, write_samples

    directory.mkdir(parents=True, exist_ok=True)
    pixels = []
    for s, start in enumerate(range(0, len(seq), rows)):
        chunk = seq[start:start + rows]
        samples = [Sample(it.key, [(it.suffix, it.data),
                                   ("json", json.dumps({"file": it.file, "copy": it.copy}).encode())])
                   for it in chunk]
        with open(directory / f"bench-{s:06d}.tar", "wb") as f:
            write_samples(f, samples)
        pixels.append(sum(it.pixel_bytes for it in chunk))
    return pixels


# ----------------------------------------------------------------------------- bare codec


def bare_codec(seq: list[Item], codec_id: str, quality: float | None,
               device: str = "cpu") -> dict[str, Any]:
    """The codec alone, in the driver, on the same images in the pipeline's batch size.

    Each step is timed on its own so that one loop gives every reference figure: encode +
    decode + PSNR (what compress does per image beyond plumbing), the source decode the
    pipeline also pays, and decode / decode + writing the original format (what restore does).
    Wall and CPU time both: CPU time holds when other processes share the cores. CPU time is
    the whole process's (Ray is not started yet, so that is this loop and torch's own threads).
    Runs before session 7 counted this thread's time only, which left out torch's intra-op
    threads: their "CPU efficiency" compared about half of the bare loop's CPU with all of
    the pipeline's, and is not comparable with later runs.
    """
    from models.registry import get_codec
    from pipeline.images import encode_for_restore, prepare, psnr
    from pipeline.shard_encode import Batching

    codec = get_codec(codec_id, quality).to(device)
    steps = ("source_decode", "encode", "decode", "psnr", "write_original")
    wall = dict.fromkeys(steps, 0.0)
    cpu = dict.fromkeys(steps, 0.0)
    bitstream_bytes = 0
    psnrs = []
    _warm_up(codec, device)
    cpu0 = _tree_cpu()
    busy0 = _busy_cpu()

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    size, _ = Batching().resolved(codec)  # the batches a compress worker codes
    for start in range(0, len(seq), size):
        batch = seq[start:start + size]
        marks = [clock()]
        prepared = [prepare(it.data, 1 << 40) for it in batch]
        marks.append(clock())
        streams = codec.encode_batch([p[0] for p in prepared])
        marks.append(clock())
        decoded = codec.decode_batch(streams)
        marks.append(clock())
        psnrs.extend(psnr(p[0], d.image) for p, d in zip(prepared, decoded, strict=True))
        marks.append(clock())
        for p, d in zip(prepared, decoded, strict=True):
            encode_for_restore(d.image, p[1], p[2])
        marks.append(clock())
        for k, a, b in zip(steps, marks[:-1], marks[1:], strict=True):
            wall[k] += b[0] - a[0]
            cpu[k] += b[1] - a[1]
        bitstream_bytes += sum(len(s) for s in streams)
    return {
        "codec": codec.id, "quality": codec.quality, "images": len(seq),
        "pixel_bytes": sum(it.pixel_bytes for it in seq),
        "source_bytes": sum(len(it.data) for it in seq),
        "bitstream_bytes": bitstream_bytes,
        "mean_psnr": float(np.mean([p for p in psnrs if np.isfinite(p)])) if psnrs else None,
        "seconds": {k: round(v, 3) for k, v in wall.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "contention": _contention(cpu0, busy0),
    }


def _warm_up(codec, device: str) -> None:
    """On a GPU, one untimed round trip first: the CUDA context and the kernels' first loads
    are paid once per process, not per image (the actors pay theirs inside compress)."""
    if device != "cpu":
        codec.decode_batch(codec.encode_batch([np.zeros((64, 64, 3), np.uint8)]))


def in_worker(src: Path, work: Path, codec_id: str, quality: float | None,
              reps: int, device: str = "cpu") -> list[dict[str, Any]]:
    """``encode_shard`` called directly (no Ray) on the big shards, with the worker's threads
    (the reader and the check thread, ``Batching``) off and on, alternated ``reps`` times: what
    they buy, with the same codec object, in the same process, minutes apart. Wall and CPU
    seconds (this process, all threads)."""
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    codec = get_codec(codec_id, quality).to(device)
    _warm_up(codec, device)
    shards = sorted(src.glob("*.tar"))
    out = []
    for rep in range(reps):
        for prefetch in (False, True):
            archive = work / f"inworker-{rep}-{int(prefetch)}"
            wall0, cpu0 = time.perf_counter(), time.process_time()
            busy0 = _busy_cpu()
            images = 0
            threads = Batching(prefetch=prefetch, check_thread=prefetch)
            for path in shards:
                stats = encode_shard(Shard(str(path), path.stem, path.name), str(archive), codec,
                                     guard=Guard(size=False), batching=threads)
                images += stats["samples"]
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            busy = _busy_cpu() - busy0
            out.append({"rep": rep, "prefetch": prefetch, "check_thread": prefetch, "images": images,
                        "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                        "others_cpu_share": round(max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1)), 3)})
            shutil.rmtree(archive, ignore_errors=True)
            print(f"in-worker, threads {'on' if prefetch else 'off'}: {images / wall:.2f} img/s",
                  flush=True)
    return out


# ----------------------------------------------------------------------------- RSS sampling


def _psutil():
    """psutil ships inside Ray (ray/thirdparty_files, on sys.path once ray is imported)."""
    import importlib

    import ray  # noqa: F401  (puts ray/thirdparty_files on sys.path)

    return importlib.import_module("psutil")


def _tree_cpu() -> tuple[float, float]:
    """(CPU seconds used so far by this process and its descendants, wall clock).

    Each living process's own time plus the time of the children it has reaped: an actor that
    exits is reaped by the raylet (a descendant), so its time stays in the sum."""
    psutil = _psutil()
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total, time.monotonic()


def _busy_cpu() -> float:
    """CPU seconds all cores have been busy (not idle or waiting for I/O) since boot."""
    t = _psutil().cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _contention(tree0: tuple[float, float], busy0: float, mine: float | None = None,
                sampler: float = 0.0) -> dict[str, float]:
    """How much of the machine this benchmark had during an interval: its own CPU use (this
    process and its descendants, Ray included; ``mine`` when the caller counted it), less the
    ``sampler`` seconds the measuring thread spent, and that of every other process, both as a
    share of all cores. A large ``others`` share means the wall-clock figures are inflated."""
    tree1, busy1 = _tree_cpu(), _busy_cpu()
    capacity = (tree1[1] - tree0[1]) * (os.cpu_count() or 1)
    mine = tree1[0] - tree0[0] if mine is None else mine
    others = max(0.0, (busy1 - busy0) - mine)
    ours = max(0.0, mine - sampler)
    return {"cpu_seconds": round(ours, 2), "ours": round(ours / capacity, 3) if capacity else 0.0,
            "others": round(others / capacity, 3) if capacity else 0.0,
            "sampler_cpu_seconds": round(sampler, 3),
            "loadavg_1min": round(os.getloadavg()[0], 2)}


@dataclass
class WorkerMemory:
    pid: int
    title: str
    peak_rss: int
    hwm: int | None
    ready_rss: int | None = None  # first sample after __init__: imports done, codec loaded
    nice: int | None = None
    samples: int = 1


def _proc_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a living process in bytes, from one read of ``/proc/PID/status``;
    None when it is gone (or off Linux)."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break  # VmRSS follows VmHWM
    except OSError:
        return None
    return None if rss is None or hwm is None else (rss, hwm)


def _proc_title(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


@dataclass
class RssSampler:
    """Samples, from the driver, the RSS of every Ray actor process while a job runs.

    Actor processes are found as descendants of this process (in-process Ray: driver ->
    raylet -> workers) whose process title names ``worker_class``
    (``ray::CompressWorker``, ``ray::CompressWorker.__call__`` while it works). For each one:
    the largest RSS sampled, and the kernel's own peak (VmHWM, read at every sample, so short
    spikes between samples count). Actors of an earlier run that are still shutting down are left out.

    Two cadences, because the sampler shares the cores with what it measures: every
    ``interval`` it reads ``/proc/PID/status`` and ``cmdline`` of the actors it knows (well
    under a millisecond); every ``walk_every`` it walks all descendants with psutil, once, to
    find new actors and to add up CPU time (at every sample until it has found an actor). Until
    session 22 it walked every 0.1 s, which cost the driver 10-11 % of one core at nice 0,
    beside nice-15 actors (benchmarks/pipeline/sampler-cost/). Its own CPU time is counted
    (``sampler_cpu_seconds``) and left out of the pipeline's.
    """

    worker_class: str
    interval: float = 0.1
    walk_every: float = 1.0
    workers: dict[int, WorkerMemory] = field(default_factory=dict)
    contention: dict[str, float] | None = None
    sampler_cpu_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        psutil = _psutil()
        self._earlier = {p.pid for p, _ in _actors(psutil, psutil.Process(), self.marker)}
        self._cpu_last: dict[int, float] = {}
        self._cpu_base = self._cpu_seen(psutil, psutil.Process())
        self._cpu_last.clear()
        self._tree0, self._busy0 = _tree_cpu(), _busy_cpu()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        mine = sum(last - self._cpu_base.get(pid, 0.0) for pid, last in self._cpu_last.items())
        self.contention = _contention(self._tree0, self._busy0, mine, self.sampler_cpu_seconds)

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        psutil = _psutil()
        me = psutil.Process()
        next_walk = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_walk:
                self.sample(psutil, me)
                # until the first actor is found (while they start), walk at every sample
                next_walk = time.monotonic() + (self.walk_every if self.workers else 0.0)
            else:
                self.sample_known()
            self._stop.wait(self.interval)
        self.sample(psutil, me)
        self.sampler_cpu_seconds = time.thread_time() - cpu0

    @property
    def marker(self) -> str:
        return f"ray::{self.worker_class}"

    def _cpu_seen(self, psutil, me, children: list | None = None) -> dict[int, float]:
        """CPU seconds (user + system) of this process and each descendant (``children``, when
        the caller has listed them), remembered per PID so that a process that exits keeps what
        it used up to the last sample (a dead process's time is not reliably added to any
        living one's)."""
        try:
            procs = [me, *(me.children(recursive=True) if children is None else children)]
        except psutil.Error:
            return dict(self._cpu_last)
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self._cpu_last[p.pid] = t.user + t.system
        return dict(self._cpu_last)

    def sample(self, psutil, me) -> None:
        """The full walk, once over the descendants: their CPU times, new actors (recorded as
        found), then the RSS of the actors known before."""
        try:
            children = me.children(recursive=True)
        except psutil.Error:
            children = []
        self._cpu_seen(psutil, me, children)
        known = list(self.workers)
        for p, title in _actors(psutil, me, self.marker, children):
            if p.pid in self._earlier or p.pid in self.workers:
                continue
            try:
                nice = p.nice()
            except psutil.Error:
                nice = None
            if self._record(p.pid, title) and nice is not None:
                self.workers[p.pid].nice = nice
        self.sample_known(known)

    def sample_known(self, pids: list[int] | None = None) -> None:
        """RSS and VmHWM of the actors found so far (or of ``pids``): two small reads of /proc
        per actor."""
        for pid in list(self.workers) if pids is None else pids:
            title = _proc_title(pid)
            if title is not None:
                self._record(pid, title)

    def _record(self, pid: int, title: str) -> bool:
        status = _proc_status(pid)
        if status is None:  # gone between listing and reading
            return False
        rss, hwm = status
        ready = None if title.rstrip().endswith("__init__") else rss
        w = self.workers.get(pid)
        if w is None:
            self.workers[pid] = WorkerMemory(pid, title.strip()[:80], rss, hwm, ready)
        else:
            w.peak_rss = max(w.peak_rss, rss)
            w.hwm = max(w.hwm or 0, hwm)
            w.ready_rss = w.ready_rss if w.ready_rss is not None else ready
            w.samples += 1
        return True

    def summary(self) -> dict[str, Any]:
        ws = list(self.workers.values())
        ready = [w for w in ws if w.ready_rss is not None]
        return {
            "workers": len(ws),
            "peak_rss_mib": _mib(max((w.peak_rss for w in ws), default=0)),
            "peak_hwm_mib": _mib(max((w.hwm or 0 for w in ws), default=0)),
            "ready_rss_mib": _mib(max((w.ready_rss for w in ready), default=0)),
            "growth_mib": _mib(max((w.peak_rss - w.ready_rss for w in ready), default=0)),
            "samples": sum(w.samples for w in ws),
            "contention": self.contention,
            "nice": max((w.nice for w in ws if w.nice is not None), default=None),
            "per_worker": [{"pid": w.pid, "title": w.title, "peak_rss_mib": _mib(w.peak_rss),
                            "hwm_mib": _mib(w.hwm or 0),
                            "ready_rss_mib": None if w.ready_rss is None else _mib(w.ready_rss),
                            "samples": w.samples} for w in ws],
        }


def _actors(psutil, me, marker: str, children: list | None = None) -> list[tuple[Any, str]]:
    """Descendant processes (``children``, when the caller has listed them) whose title contains
    ``marker``, with the title, leaving out the children of such a process: a child forked by
    an actor carries the actor's title until it execs (session 13: under load the sampler
    caught one and counted 3 workers for 2 actors)."""
    if children is None:
        try:
            children = me.children(recursive=True)
        except psutil.Error:
            return []
    found = {}
    for p in children:
        try:
            title, parent = " ".join(p.cmdline()), p.ppid()
        except psutil.Error:
            continue
        if marker in title:
            found[p.pid] = (p, title, parent)
    return [(p, title) for p, title, parent in found.values() if parent not in found]


def wait_for_actors_to_exit(timeout: float = 30.0) -> None:
    """The runner kills its actors when a call ends, but they exit asynchronously; the next
    measurement starts only when the previous actors are gone, so they neither use CPU nor get
    counted."""
    psutil = _psutil()
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while (any(_actors(psutil, me, f"ray::{name}") for name in ("CompressWorker", "RestoreWorker"))
           and time.monotonic() < deadline):
        time.sleep(0.1)


def _mib(n: int | float) -> float:
    return round(n / MIB, 1)


# ----------------------------------------------------------------------------- archive bytes


def archive_bytes(archive: Path) -> dict[str, Any]:
    """Shard-file bytes split into bitstreams, kept members and the rest (the overhead), the
    payload counted as stored (``jobs.payload_bytes``)."""
    from jobs.payload_bytes import stored_payload

    rows = bitstreams = members = stored_members = stored_bitstreams = footer = files = 0
    for path in sorted((archive / "shards").glob("*.parquet")):
        files += path.stat().st_size
        part = stored_payload(path)
        rows += part["rows"]
        footer += part["footer_bytes"]
        bitstreams += part["bitstream_bytes"]
        members += part["member_bytes"]
        stored_bitstreams += part["stored_bitstream_bytes"]
        stored_members += part["stored_member_bytes"]
    whole = sum(p.stat().st_size for p in archive.rglob("*") if p.is_file())
    overhead = files - stored_bitstreams - stored_members
    return {
        "rows": rows, "shard_file_bytes": files, "archive_bytes": whole,
        "bitstream_bytes": bitstreams, "member_bytes": members,
        "stored_bitstream_bytes": stored_bitstreams, "stored_member_bytes": stored_members,
        "overhead_bytes": overhead,
        "overhead_bytes_per_row": round(overhead / rows, 1) if rows else None,
        "footer_bytes_per_row": round(footer / rows, 1) if rows else None,
        "in_pages_bytes_per_row": round((overhead - footer) / rows, 1) if rows else None,
        "archive_overhead_bytes_per_row":
            round((whole - stored_bitstreams - stored_members) / rows, 1) if rows else None,
    }


# ----------------------------------------------------------------------------- pipeline runs


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_pipeline(src: Path, work: Path, label: str, actors: int, codec_id: str,
                 quality: float | None, interval: float, prefetch: bool = True,
                 num_cpus: float = 0.5, num_gpus: float = 0.0) -> dict[str, Any]:
    """compress then restore one layout with ``actors`` actors, each under an RSS sampler."""
    from pipeline.compress import compress
    from pipeline.restore import restore
    from pipeline.runner import RayOptions
    from pipeline.shard_encode import Batching, Guard

    archive, restored = work / f"arc-{label}-{actors}", work / f"out-{label}-{actors}"
    options = RayOptions(actors=actors, num_cpus=num_cpus, num_gpus=num_gpus)
    wait_for_actors_to_exit()
    with RssSampler("CompressWorker", interval) as mem_c:
        started = time.monotonic()
        # Guard off: every image goes through the codec, as in the bare loop.
        report = compress([str(src)], str(archive), codec_id, quality, ray_options=options,
                          progress=False, guard=Guard(size=False),
                          batching=Batching(prefetch=prefetch))
        compress_s = time.monotonic() - started
    if not report.ok:
        raise SystemExit(f"pipeline benchmark: compress failed: {report.failed}")
    stats = json.loads((archive / "_stats.json").read_text())
    worker_s = sum(s.get("seconds", 0.0) for s in stats["shards"].values())
    wait_for_actors_to_exit()
    with RssSampler("RestoreWorker", interval) as mem_r:
        started = time.monotonic()
        back = restore(str(archive), str(restored), ray_options=options, progress=False)
        restore_s = time.monotonic() - started
    if not back.ok:
        raise SystemExit(f"pipeline benchmark: restore failed: {back.failed}")
    restored_bytes = _dir_bytes(restored)
    shutil.rmtree(restored, ignore_errors=True)
    t = report.totals
    return {
        "layout": label, "actors": actors, "images": t["samples"], "compressed": t["compressed"],
        "compress_cpu_seconds": mem_c.contention["cpu_seconds"],
        "restore_cpu_seconds": mem_r.contention["cpu_seconds"],
        "shards": t["shards"], "source_bytes": t["source_bytes"], "pixel_bytes": 3 * t["pixels"],
        "mean_psnr": t["mean_psnr"],
        "compress_seconds": round(compress_s, 3), "compress_in_worker_seconds": round(worker_s, 3),
        "restore_seconds": round(restore_s, 3), "restored_samples": sum(back.written.values()),
        "restored_bytes": restored_bytes,
        "compress_memory": mem_c.summary(), "restore_memory": mem_r.summary(),
        "archive": str(archive),
    }


# ----------------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Settings:
    images: Path
    out: Path
    codec: str = "webp"
    quality: float | None = None
    rows_small: int = 8
    rows_big: int = 256
    big_shards: int = 2
    budget_mib: float = 64.0
    actors: tuple[int, ...] = (1, 2)
    interval: float = 0.1
    prefetch_reps: int = 1
    prefetch: bool = True  # the Ray runs' compress reader thread (--no-prefetch: off)
    cpus_per_actor: str = "0.5"  # a number, or "auto": (cores - 0.5) / actors
    gpus_per_actor: str = "0"  # a number, or "auto": GPUs / actors; > 0 runs the codec on cuda


def cpus_per_actor(setting: str, actors: int) -> float:
    """What each actor reserves. "auto" splits the machine between the actors, less half a CPU
    left unreserved for the driver and Ray's own processes: on 2 cores, 1 actor reserves 1.5
    (its torch gets 2 threads, ``pipeline.runner.use_reserved_cpus``), 2 actors 0.75 each (1
    thread each)."""
    if setting == "auto":
        return round(((os.cpu_count() or 1) - 0.5) / actors, 3)
    return float(setting)


def gpus_per_actor(setting: str, actors: int) -> float:
    """What each actor reserves of the GPUs. "auto" shares the machine's GPUs between the
    actors (0.5 each for 2 actors on one GPU: two codecs resident on one device, so one's
    entropy coding and I/O overlap the other's transforms)."""
    if setting == "auto":
        import torch

        return round(torch.cuda.device_count() / actors, 3)
    return float(setting)


def _start_ray() -> bool:
    """In-process Ray on 127.0.0.1 (all local cores) unless the caller started one already.
    Returns whether we started it (and so must shut it down)."""
    from pipeline.runner import prefer_loopback

    prefer_loopback()
    import ray

    if ray.is_initialized():
        return False
    temp_dir = tempfile.mkdtemp(prefix="lar-")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             _temp_dir=temp_dir, _node_ip_address="127.0.0.1", log_to_driver=False)
    return True


def _machine(device: str = "cpu") -> dict[str, Any]:
    psutil = _psutil()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import PIL
    import ray

    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "ray": ray.__version__, "pillow": PIL.__version__, "gpu": _gpu_name(device)}


def _gpu_name(device: str) -> str:
    if device == "cpu":
        return "none used"
    import torch

    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"


def run(settings: Settings, command: str) -> dict[str, Any]:
    """Every measurement; returns the summary written to results.json."""
    from models.allocator import keep_freed_memory
    from pipeline.shard_encode import Batching

    keep_freed_memory()  # the bare loop and in-worker runs here use the workers' allocator
    s = settings
    images = load_images(s.images)
    n = s.big_shards * s.rows_big
    if s.rows_small >= s.rows_big:
        raise SystemExit("pipeline benchmark: --rows-small must be smaller than --rows-big")
    big_shard_pixels = s.rows_big * float(np.mean([images[i % len(images)].pixels.size
                                                   for i in range(n)]))
    if big_shard_pixels < 3 * s.budget_mib * MIB:
        raise SystemExit(
            f"pipeline benchmark: a big shard holds {big_shard_pixels / MIB:.1f} MiB of decoded "
            f"pixels, less than 3x the {s.budget_mib:g} MiB budget; raise --rows-big or lower --budget-mib"
        )
    device = "cuda" if gpus_per_actor(s.gpus_per_actor, 1) > 0 else "cpu"
    started_all = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="latentarc-pbench-"))
    started_ray = False
    try:
        seq = sequence(images, n)
        layouts = {"small": s.rows_small, "big": s.rows_big}
        shard_pixels = {name: write_layout(seq, rows, work / f"src-{name}")
                        for name, rows in layouts.items()}
        print(f"pipeline benchmark: {n} images ({len(images)} distinct from {s.images}), "
              f"small shards of {s.rows_small}, big shards of {s.rows_big}", flush=True)
        # Before Ray starts: the bare loop is the codec alone, with no cluster idling beside it.
        bare = bare_codec(seq, s.codec, s.quality, device)
        del seq
        print(f"bare {s.codec}: {n / _bare_compress_s(bare):.2f} img/s (encode+decode+PSNR)", flush=True)
        prefetch_ab = in_worker(work / "src-big", work, s.codec, s.quality, s.prefetch_reps, device)
        started_ray = _start_ray()
        import ray

        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        wanted = max(gpus_per_actor(s.gpus_per_actor, a) * a for a in s.actors)
        if wanted > ray.cluster_resources().get("GPU", 0):  # else the actors would wait forever
            raise SystemExit(f"pipeline benchmark: the actors need {wanted:g} GPU(s), Ray sees "
                             f"{ray.cluster_resources().get('GPU', 0):g}")
        runs = []
        for name in layouts:
            for actors in s.actors:
                r = run_pipeline(work / f"src-{name}", work, name, actors, s.codec, s.quality,
                                 s.interval, s.prefetch, cpus_per_actor(s.cpus_per_actor, actors),
                                 gpus_per_actor(s.gpus_per_actor, actors))
                r["rows_per_shard"] = layouts[name]
                r["max_shard_pixel_mib"] = _mib(max(shard_pixels[name]))
                runs.append(r)
                print(f"{name} shards, {actors} actor(s): "
                      f"compress {r['images'] / r['compress_seconds']:.2f} img/s, "
                      f"restore {r['images'] / r['restore_seconds']:.2f} img/s, worker peak RSS "
                      f"{r['compress_memory']['peak_rss_mib']:.0f}/"
                      f"{r['restore_memory']['peak_rss_mib']:.0f} MiB", flush=True)
        overhead = {name: archive_bytes(Path(next(r["archive"] for r in runs if r["layout"] == name)))
                    for name in layouts}
        for r in runs:
            r.pop("archive")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    summary = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(device),
        "settings": {"images": str(s.images), "distinct_images": len(images), "images_per_run": n,
                     "codec": bare["codec"], "quality": bare["quality"], "rows_small": s.rows_small,
                     "rows_big": s.rows_big, "big_shards": s.big_shards, "budget_mib": s.budget_mib,
                     "big_shard_pixel_mib": _mib(big_shard_pixels), "actors": list(s.actors),
                     "sample_interval_s": s.interval, "walk_every_s": RssSampler.walk_every,
                     "driver_nice": os.nice(0),
                     "prefetch": s.prefetch, "cluster_cpus": cluster_cpus,
                     "check_thread": Batching().check_thread,  # the Ray runs: the default
                     # models.allocator's settings, inherited by the workers (Ray starts them)
                     "malloc_env": {k: v for k, v in os.environ.items()
                                    if k.startswith("LATENTARC_MALLOC")},
                     "cpus_per_actor": {a: cpus_per_actor(s.cpus_per_actor, a) for a in s.actors},
                     "device": device,
                     "gpus_per_actor": {a: gpus_per_actor(s.gpus_per_actor, a) for a in s.actors}},
        "bare": bare, "in_worker": prefetch_ab, "runs": runs, "overhead": overhead,
        "total_seconds": round(time.monotonic() - started_all, 1),
    }
    summary["derived"] = derive(summary)
    return summary


def _bare_compress_s(bare: dict) -> float:
    t = bare["seconds"]
    return t["encode"] + t["decode"] + t["psnr"]


def derive(summary: dict[str, Any]) -> dict[str, Any]:
    """Throughputs, efficiencies, memory ratios and the issue's targets, from the raw figures."""
    bare, n = summary["bare"], summary["bare"]["images"]
    t = bare["seconds"]
    px_mb = bare["pixel_bytes"] / 1e6
    steps = {
        "encode+decode+PSNR": ("encode", "decode", "psnr"),
        "source decode+encode+decode+PSNR": ("source_decode", "encode", "decode", "psnr"),
        "decode": ("decode",),
        "decode+write original format": ("decode", "write_original"),
    }
    references = {k: sum(t[x] for x in v) for k, v in steps.items()}
    cpu_refs = {k: sum(bare["cpu_seconds"][x] for x in v) for k, v in steps.items()}
    bare_rows = [{"what": k, "seconds": round(v, 3), "cpu_seconds": round(cpu_refs[k], 3),
                  "images_per_s": round(n / v, 3), "pixel_mb_per_s": round(px_mb / v, 3)}
                 for k, v in references.items()]
    compress_ref, restore_ref = references["encode+decode+PSNR"], references["decode"]
    restore_ref_full = references["decode+write original format"]
    pipeline_rows = []
    for r in summary["runs"]:
        for op in ("compress", "restore"):
            sec = r[f"{op}_seconds"]
            ref = compress_ref if op == "compress" else restore_ref
            eff = (n / sec) / (n / ref)
            row = {"op": op, "layout": r["layout"], "rows_per_shard": r["rows_per_shard"],
                   "shards": r["shards"], "actors": r["actors"], "images": r["images"],
                   "seconds": sec, "images_per_s": round(r["images"] / sec, 3),
                   "pixel_mb_per_s": round(r["pixel_bytes"] / 1e6 / sec, 3),
                   "file_mb_per_s": round((r["source_bytes"] if op == "compress" else r["restored_bytes"])
                                          / 1e6 / sec, 3),
                   "efficiency": round(eff, 3), "efficiency_per_actor": round(eff / r["actors"], 3),
                   # CPU seconds the bare steps took / CPU seconds the pipeline's processes took
                   # (Ray's own included): what the pipeline adds, whoever else uses the cores.
                   "cpu_efficiency": round(cpu_refs["encode+decode+PSNR" if op == "compress"
                                                    else "decode+write original format"]
                                           / r[f"{op}_cpu_seconds"], 3),
                   "others_cpu_share": r[f"{op}_memory"]["contention"]["others"]}
            if op == "compress":
                # Time inside encode_shard only (no Ray start-up or scheduling), one actor's view.
                row["in_worker_efficiency"] = round(compress_ref / r["compress_in_worker_seconds"], 3)
            else:
                row["efficiency_vs_decode_and_write"] = round(restore_ref_full / sec, 3)
            pipeline_rows.append(row)
    memory = []
    actors = summary["settings"]["actors"]
    by = {(r["layout"], r["actors"]): r for r in summary["runs"]}
    for a in actors:
        for op in ("compress", "restore"):
            small, big = by[("small", a)][f"{op}_memory"], by[("big", a)][f"{op}_memory"]
            memory.append({"op": op, "actors": a, "small_peak_rss_mib": small["peak_rss_mib"],
                           "big_peak_rss_mib": big["peak_rss_mib"],
                           "ratio": round(big["peak_rss_mib"] / small["peak_rss_mib"], 3)
                           if small["peak_rss_mib"] else None,
                           "hwm_ratio": round(big["peak_hwm_mib"] / small["peak_hwm_mib"], 3)
                           if small["peak_hwm_mib"] else None})
    scaling = []
    if len(actors) > 1:
        for layout in ("small", "big"):
            for op in ("compress", "restore"):
                base = by[(layout, actors[0])][f"{op}_seconds"]
                for a in actors[1:]:
                    scaling.append({"layout": layout, "op": op, "from_actors": actors[0], "to_actors": a,
                                    "speedup": round(base / by[(layout, a)][f"{op}_seconds"], 3)})
    headline = next((p for p in pipeline_rows if p["op"] == "compress" and p["layout"] == "big"
                     and p["actors"] == 1), None)
    # What `latentarc compress` does by default on this machine, over an archive of many
    # shards: as many actors as the cluster has CPUs, or with GPUs ACTORS_PER_GPU per GPU, each
    # with 1 / ACTORS_PER_GPU of it (pipeline.runner.auto_resources, default_actors). A run
    # with other per-actor shares has no such row.
    from pipeline.runner import ACTORS_PER_GPU

    settings = summary["settings"]
    shares = {int(a): g for a, g in (settings.get("gpus_per_actor") or {}).items()}
    if settings.get("device") == "cuda" and shares:
        actors, share = next(iter(shares.items()))
        gpus = round(actors * share)  # "auto" gives each actor GPUs / actors
        default_count = ACTORS_PER_GPU * gpus
        default_what = (f"{default_count} actors, {1 / ACTORS_PER_GPU:g} GPU each (the CLI's "
                        "default count and share with GPUs)")
        default_share: float | None = 1 / ACTORS_PER_GPU
    else:
        default_count = settings.get("cluster_cpus") or summary["machine"]["cores"]
        default_what = f"{default_count} actors (one per cluster CPU: the CLI's default count)"
        default_share = None  # CPU actors: any reservation
    by_default = next((p for p in pipeline_rows if p["op"] == "compress" and p["layout"] == "small"
                       and p["actors"] == min(default_count, p["shards"])
                       and default_share in (None, shares.get(p["actors"]))), None)
    big_overhead = summary["overhead"]["big"]["overhead_bytes_per_row"]
    targets = {
        "efficiency_ge_0.9": {
            "value": None if headline is None else headline["efficiency"],
            "what": "compress, big shards, 1 actor, vs bare encode+decode+PSNR",
            "met": None if headline is None else headline["efficiency"] >= 0.9},
        "efficiency_ge_0.9_default_actors": {
            "value": None if by_default is None else by_default["efficiency"],
            "what": f"compress, {summary['settings']['rows_small']}-row shards, "
                    f"{default_what}, vs bare encode+decode+PSNR",
            "met": None if by_default is None else by_default["efficiency"] >= 0.9},
        "cpu_efficiency_ge_0.9": {
            "value": None if headline is None else headline["cpu_efficiency"],
            "what": "the same in CPU seconds (bare steps / driver + all Ray processes): "
                    "unaffected by other load on the cores",
            "met": None if headline is None else headline["cpu_efficiency"] >= 0.9},
        "big_shard_rss_within_10pct": {
            "value": max((m["ratio"] for m in memory if m["ratio"] is not None), default=None),
            "what": "largest big/small peak-RSS ratio over compress/restore and actor counts",
            "met": all(m["ratio"] is not None and m["ratio"] <= 1.10 for m in memory)},
        "overhead_le_128_B_per_row": {
            "value": big_overhead, "what": f"big shards ({summary['settings']['rows_big']} rows)",
            "met": big_overhead is not None and big_overhead <= 128},
    }
    in_worker_rows = [{**r, "images_per_s": round(r["images"] / r["seconds"], 3),
                       "efficiency": round(compress_ref / r["seconds"] * r["images"] / n, 3),
                       "cpu_efficiency": round(cpu_refs["encode+decode+PSNR"] / r["cpu_seconds"]
                                               * r["images"] / n, 3)}
                      for r in summary.get("in_worker", [])]
    with_thread = [r["efficiency"] for r in in_worker_rows if r["prefetch"]]
    if with_thread:
        targets["in_worker_efficiency_ge_0.9"] = {
            "value": min(with_thread),
            "what": "encode_shard with its threads, called directly (no Ray start-up or "
                    "scheduling), vs bare encode+decode+PSNR; the worst repetition",
            "met": min(with_thread) >= 0.9}
    return {"bare": bare_rows, "in_worker": in_worker_rows, "pipeline": pipeline_rows,
            "memory": memory, "scaling": scaling, "targets": targets}


# ----------------------------------------------------------------------------- report


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def _worker_nice(summary: dict[str, Any]) -> str:
    nices = {r[f"{op}_memory"]["nice"] for r in summary["runs"] for op in ("compress", "restore")}
    nices.discard(None)
    return "/".join(str(x) for x in sorted(nices)) or "?"


def _reservations(s: dict[str, Any]) -> str:
    """CPUs each actor reserved, per actor count (results before --cpus-per-actor: 0.5)."""
    per = s.get("cpus_per_actor") or {str(a): 0.5 for a in s["actors"]}
    return ", ".join(f"{v:g} each with {a} actor(s)" for a, v in per.items())


def _gpu_text(m: dict[str, Any], s: dict[str, Any]) -> str:
    """"no GPU" for CPU runs (and every run before --gpus-per-actor); else the GPU and shares."""
    if s.get("device", "cpu") == "cpu":
        return "no GPU"
    shares = ", ".join(f"{v:g} each with {a} actor(s)" for a, v in s["gpus_per_actor"].items())
    return f"codec on {m['gpu']}: the bare loop and in-worker runs, and actors reserving {shares} GPU"


def to_markdown(summary: dict[str, Any]) -> str:
    s, d, m = summary["settings"], summary["derived"], summary["machine"]
    q = "default" if s["quality"] is None else f"{s['quality']:g}"
    lines = [
        "# Pipeline benchmark: compress/restore vs the bare codec, worker memory, row overhead",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Date: {summary['date']}. Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, "
        f"{m['os']}, {_gpu_text(m, s)}; Python {m['python']}, Ray {m['ray']}, Pillow {m['pillow']}. "
        f"Total run time {summary['total_seconds']:.0f} s.",
        "",
        f"Images: {s['images_per_run']} per run = the {s['distinct_images']} images of `{s['images']}` "
        f"repeated in order, each sample an image member plus a small `.json` member. Codec "
        f"`{s['codec']}` quality {q}; compress's reader thread "
        f"{'on' if s.get('prefetch', True) else 'off (--no-prefetch)'}"
        f"{'' if 'check_thread' not in s else ', check thread ' + ('on' if s['check_thread'] else 'off')}"
        "; actors reserve "
        f"{_reservations(s)} CPU (torch threads: the reservation rounded up); malloc: "
        f"{' '.join(f'{k}={v}' for k, v in s.get('malloc_env', {}).items()) or 'package defaults'}. "
        f"The same {s['images_per_run']} images are packed as small shards "
        f"({s['rows_small']} rows) and big shards ({s['rows_big']} rows, {s['big_shards']} shards). "
        "Ray runs in-process on 127.0.0.1 with every local core; files are local. "
        "`compress` runs with the size guard off so that every image goes through the codec, "
        "as in the bare loop. Copy 0 of each image is the original file; copy k > 0 is the image "
        "circularly shifted by (5k, 7k) pixels and saved as PNG, so that no two rows are identical "
        "(identical rows would be deduplicated by Parquet's dictionary encoding and distort the "
        "byte figures).",
        "",
        f"The machine may be shared: `others` columns give the share of all cores used by processes "
        f"outside this benchmark (its driver and all Ray processes) during each measurement. The "
        f"driver ran at nice {s['driver_nice']}; Ray workers at nice {_worker_nice(summary)} "
        + ("(Ray's default lowers its workers' priority), so under contention the pipeline loses "
           "more wall time than the bare loop. " if _worker_nice(summary) not in ("0", "?") else
           "(this run's Ray was started with its workers at the driver's priority). ")
        + "CPU efficiency (CPU seconds, not wall) is the figure that holds under contention.",
        "",
        "## Targets",
        "",
        "| target | value | measured on | result |",
        "|---|---|---|---|",
    ]
    names = {"efficiency_ge_0.9": "pipeline efficiency >= 0.9 (one actor, one big shard)",
             "efficiency_ge_0.9_default_actors": "pipeline efficiency >= 0.9 (default actor count)",
             "cpu_efficiency_ge_0.9": "pipeline efficiency >= 0.9 (CPU time)",
             "big_shard_rss_within_10pct": "big-shard peak RSS within 10% of small-shard",
             "overhead_le_128_B_per_row": "overhead <= 128 B/row",
             "in_worker_efficiency_ge_0.9": "in-worker efficiency >= 0.9 (prefetch on)"}
    for k, t in d["targets"].items():
        lines.append(f"| {names[k]} | {t['value']} | {t['what']} | {_yes(t['met'])} |")
    lines += [
        "",
        "## 1. Throughput: pipeline vs bare codec",
        "",
        "Bare: the codec in a plain loop in the driver process on the same images (already decoded "
        "pixels), batches of the pipeline's chunk size; each step timed separately in one loop. "
        "Pipeline: wall time of one `compress` / `restore` call, including Ray starting the "
        "actor pool (constructing the codec) and every per-shard step (tar read, source decode, "
        "hashes, Parquet write, atomic rename; for restore: Parquet read, CRC and content-hash "
        "checks, writing the original format, tar write). Pixel MB = decoded RGB bytes (10^6); "
        "file MB = source tars for compress, restored tars for restore.",
        "",
        f"Bare loop: others' CPU share {summary['bare']['contention']['others']:.0%}, "
        f"1-min load average at its end {summary['bare']['contention']['loadavg_1min']}.",
        "",
        "| bare codec, driver loop | seconds | CPU seconds | images/s | pixel MB/s |",
        "|---|---|---|---|---|",
    ]
    for b in d["bare"]:
        lines.append(f"| {b['what']} | {b['seconds']:.2f} | {b['cpu_seconds']:.2f} | {b['images_per_s']:.2f} "
                     f"| {b['pixel_mb_per_s']:.2f} |")
    lines += [
        "",
        "Efficiency = pipeline images/s / bare images/s; compress against bare encode+decode+PSNR, "
        "restore against bare decode. Per actor = efficiency / actors. In-worker = bare "
        "encode+decode+PSNR time / summed time inside `encode_shard` (leaves out Ray start-up and "
        "scheduling, keeps source decode, hashes and Parquet). Restore vs decode+write = against "
        "bare decode plus writing the original format (PNG for Kodak), the work restore cannot avoid. "
        "CPU efficiency = bare CPU seconds (compress: encode+decode+PSNR; restore: decode+write "
        "original format) / CPU seconds of the driver and every Ray process during the call.",
        "",
        "| op | shards x rows | actors | seconds | images/s | pixel MB/s | file MB/s | efficiency "
        "| per actor | in-worker / vs decode+write | CPU efficiency | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in d["pipeline"]:
        extra = p.get("in_worker_efficiency", p.get("efficiency_vs_decode_and_write"))
        lines.append(
            f"| {p['op']} | {p['shards']} x {p['rows_per_shard']} | {p['actors']} | {p['seconds']:.2f} "
            f"| {p['images_per_s']:.2f} | {p['pixel_mb_per_s']:.2f} | {p['file_mb_per_s']:.2f} "
            f"| {p['efficiency']:.3f} | {p['efficiency_per_actor']:.3f} | {extra:.3f} "
            f"| {p['cpu_efficiency']:.3f} | {p['others_cpu_share']:.0%} |")
    if d.get("in_worker"):
        lines += [
            "",
            "### The worker's threads, in one worker",
            "",
            "`encode_shard` called directly in the driver process (no Ray) on the big shards, with "
            "everything in the codec's thread (off), or with tar reading and source decoding in a "
            "reader thread one codec batch ahead and, where the column says so, each batch's "
            "decode, PSNR and rows in a check thread while the next batch is encoded (on); "
            "alternated, the same codec object throughout. "
            "Efficiency = bare encode+decode+PSNR seconds / these seconds (per image). The threads "
            "overlap work that releases the GIL (Pillow decode, zlib, libwebp/torch), so they use "
            "a second core where there is one: CPU efficiency shows what it costs in CPU time.",
            "",
            "| rep | threads | images | seconds | CPU seconds | images/s | efficiency | "
            "CPU efficiency | others' CPU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["in_worker"]:
            threads = ("reader + check" if r.get("check_thread") else "reader") if r["prefetch"] else "off"
            lines.append(f"| {r['rep']} | {threads} | {r['images']} | "
                         f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['images_per_s']:.2f} | "
                         f"{r['efficiency']:.3f} | {r['cpu_efficiency']:.3f} | "
                         f"{r['others_cpu_share']:.0%} |")
    budget = s["budget_mib"]
    lines += [
        "",
        "## 2. Peak RSS per worker",
        "",
        f"Stated per-worker budget: {budget:g} MiB of decoded pixels; a big shard holds on average "
        f"{s['big_shard_pixel_mib']:.1f} MiB of decoded pixels ({s['big_shard_pixel_mib'] / budget:.1f}x the "
        f"budget), a small one {s['big_shard_pixel_mib'] * s['rows_small'] / s['rows_big']:.1f} MiB.",
        "",
        f"Method: a thread in the driver lists, every {s.get('walk_every_s', s['sample_interval_s']):g} s, "
        "the descendants of the driver process (in-process Ray: driver -> raylet -> worker "
        "processes) with psutil and keeps those whose process title contains "
        "`ray::CompressWorker` / `ray::RestoreWorker` (the codec actors); every "
        f"{s['sample_interval_s']:g} s it reads each known actor's RSS and `VmHWM` from /proc "
        "(the kernel's own peak RSS since the process started, so spikes between samples count). "
        "Actors of the previous call are waited out before each call. Figures are the largest "
        "over the call's actors. Ready = an actor's RSS at the first sample after its `__init__` "
        "(imports done, codec loaded, before or at the start of its first shard); growth = peak "
        "sampled RSS - ready. RSS counts shared pages the process touched (libraries, Ray's "
        "object store mapping). Ours / others = share of all cores used by this benchmark's "
        "processes, less the sampling thread's own CPU / by everything else during the call.",
        "",
        "| op | shards x rows | actors | actors seen | peak RSS MiB | VmHWM MiB | ready MiB "
        "| growth MiB | CPU ours / others |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        for op in ("compress", "restore"):
            mem = r[f"{op}_memory"]
            c = mem["contention"]
            busy = f"{c['ours']:.0%} / {c['others']:.0%}"
            lines.append(
                f"| {op} | {r['shards']} x {r['rows_per_shard']} | {r['actors']} | {mem['workers']} "
                f"| {mem['peak_rss_mib']:.0f} | {mem['peak_hwm_mib']:.0f} | {mem['ready_rss_mib']:.0f} "
                f"| {mem['growth_mib']:.0f} | {busy} |")
    lines += ["", "| op | actors | small-shard peak RSS MiB | big-shard peak RSS MiB | big/small "
              "| big/small (VmHWM) |", "|---|---|---|---|---|---|"]
    for mm in d["memory"]:
        lines.append(f"| {mm['op']} | {mm['actors']} | {mm['small_peak_rss_mib']:.0f} | "
                     f"{mm['big_peak_rss_mib']:.0f} | {mm['ratio']} | {mm['hwm_ratio']} |")
    lines += [
        "",
        "## 3. Archive bytes vs bitstream bytes",
        "",
        "Overhead = shard-file bytes - bitstreams - kept members (the `.json` member), per row, "
        "the payload counted as stored: the smaller of its raw bytes and its column's zstd pages "
        "(`jobs/payload_bytes.py`; before session 14 the members' raw bytes were subtracted, "
        "crediting their compression to the overhead). Footer = the Parquet footer (schema, "
        "row-group statistics, the shard's JSON metadata) spread over the rows; in pages = the "
        "rest (per-row columns: key, hashes, sizes, PSNR, ...). Whole archive adds "
        "`_index.parquet`, `_stats.json`, `_archive.json`.",
        "",
        "| layout | rows | shard files B | bitstreams B | kept members B: raw / stored | "
        "overhead B/row | of which footer | of which in pages | whole archive B/row |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, o in summary["overhead"].items():
        rows = s["rows_small"] if name == "small" else s["rows_big"]
        stored = o.get("stored_member_bytes", o["member_bytes"])  # results before session 14
        lines.append(f"| {name} ({rows} rows/shard) | {o['rows']} | {o['shard_file_bytes']} | "
                     f"{o['bitstream_bytes']} | {o['member_bytes']} / {stored} | "
                     f"{o['overhead_bytes_per_row']} | "
                     f"{o['footer_bytes_per_row']} | {o['in_pages_bytes_per_row']} | "
                     f"{o['archive_overhead_bytes_per_row']} |")
    if d["scaling"]:
        cores = m["cores"]
        if s.get("device", "cpu") == "cpu":
            why = (f"This machine has {cores} cores "
                   "for everything: the actors, the raylet/GCS, the driver and this "
                   "benchmark's sampling thread. Actors reserve "
                   f"{_reservations(s)} CPU, so Ray places both on the "
                   f"{cores} cores and they compete with the rest: the 2-actor figures are "
                   "oversubscribed and the speedup stays below 2.")
        else:
            why = ("The actors share the GPU (fractional `num_gpus`), each with its own copy of "
                   "the model resident. While one runs its transforms on the GPU, the other "
                   "does the work on the CPU (tar reading, source decode, entropy coding, "
                   "Parquet), so a speedup above 1 is GPU time one actor left idle.")
        lines += [
            "",
            "## 4. 1 vs 2 encoder actors",
            "",
            f"`RayOptions(actors=N)` (`--actors` of compress/restore). {why}",
            "",
            "| layout | op | actors | speedup |",
            "|---|---|---|---|",
        ]
        for sc in d["scaling"]:
            lines.append(f"| {sc['layout']} | {sc['op']} | {sc['from_actors']} -> {sc['to_actors']} "
                         f"| {sc['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse ``--pipeline`` mode arguments, run, write results.json and results.md."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m jobs.benchmark --pipeline", *argv])
    parser = argparse.ArgumentParser(prog="python -m jobs.benchmark --pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of images (default ../shared/datasets/kodak)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.json/md go")
    parser.add_argument("--codec", default="webp", help="any registered codec id")
    parser.add_argument("--quality", type=float, help="codec quality (default: the codec's default)")
    parser.add_argument("--rows-small", type=int, default=8, help="rows per small shard")
    parser.add_argument("--rows-big", type=int, default=256, help="rows per big shard")
    parser.add_argument("--big-shards", type=int, default=2,
                        help="big shards; images per run = big shards x rows per big shard")
    parser.add_argument("--budget-mib", type=float, default=64.0,
                        help="stated per-worker memory budget; a big shard must hold 3x it in pixels")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="actor counts to run")
    parser.add_argument("--sample-interval", type=float, default=0.1, help="RSS sampling period, s")
    parser.add_argument("--prefetch-reps", type=int, default=1,
                        help="repetitions of the in-worker comparison, the worker's threads "
                        "(reader and check) off/on (0: skip)")
    parser.add_argument("--cpus-per-actor", default="0.5",
                        help="CPUs each actor reserves: a number, or auto = (cores - 0.5) / actors "
                        "(a learned codec's torch uses the reservation rounded up in threads)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="compress without the reader thread in the Ray runs (compress "
                        "--no-prefetch), to measure what it costs in memory and buys in speed")
    parser.add_argument("--gpus-per-actor", default="0",
                        help="GPUs each actor reserves: 0 (default: the codec on the CPU), a number, "
                        "or auto = GPUs / actors; above 0 the bare loop, the in-worker runs and "
                        "the actors all run the codec on cuda")
    args = parser.parse_args(argv)
    try:
        cpus_per_actor(args.cpus_per_actor, 1)
    except ValueError:
        parser.error(f"--cpus-per-actor takes a number or auto, not {args.cpus_per_actor!r}")
    if args.gpus_per_actor != "auto":
        try:
            float(args.gpus_per_actor)
        except ValueError:
            parser.error(f"--gpus-per-actor takes a number or auto, not {args.gpus_per_actor!r}")
    elif gpus_per_actor("auto", 1) == 0:
        parser.error("--gpus-per-actor auto: torch sees no GPU here")
    settings = Settings(args.images, args.out, args.codec, args.quality, args.rows_small,
                        args.rows_big, args.big_shards, args.budget_mib, tuple(args.actors),
                        args.sample_interval, args.prefetch_reps, not args.no_prefetch,
                        args.cpus_per_actor, args.gpus_per_actor)
    summary = run(settings, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = to_markdown(summary)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
