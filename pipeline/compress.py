"""``compress``: plan which shards need work, run them on Ray, write the stats and the manifest.

Resume is the plan: a shard whose file exists, validates and was made from the same source
URL is skipped (and named as skipped); a missing or unreadable one is (re)done, and so is one
named by ``redo`` (damage inside a file's pages is found by ``verify``, which reads every
row). An archive written with another codec, quality or weights is refused, because mixing
them would make one archive decode two ways; so is a finished shard of the same name from
another source. A
damaged file whose source is not in the run fails the run (exit 1) rather than drop out of the
manifest. ``_archive.json`` is removed while work is pending and written last, only when
every shard is accounted for.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from models.allocator import keep_freed_memory
from models.registry import DEFAULT_CODEC, get_codec, uses_gpu
from pipeline import interrupt
from pipeline.archive import write_index
from pipeline.archive_format import (
    INDEX,
    MANIFEST,
    STATS,
    FormatError,
    ShardFile,
    check_version,
    codec_meta,
    read_json,
    validate_shard_file,
    write_json,
)
from pipeline.errors import Refused
from pipeline.progress import Progress
from pipeline.runner import (
    RayOptions,
    check_fits,
    default_actors,
    describe,
    resolve,
    run_per_shard,
    shard_task,
    use_reserved_cpus,
    worker_device,
)
from pipeline.shard_encode import (
    Batching,
    Guard,
    check_metrics,
    encode_shard,
    perceptual,
)
from pipeline.sources import Shard, expand_sources
from pipeline.storage import (
    StorageError,
    StorageOptions,
    check_url,
    exists,
    filesystem,
    join,
    per_file,
    remove,
    remove_temp_files,
)


@dataclass
class CompressReport:
    archive: str
    codec: str
    quality: float | None
    shards: list[str]
    skipped: list[str] = field(default_factory=list)
    redone: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: list[str] = field(default_factory=list)  # shard files left half-written
    worker_processes: int = 0  # distinct worker processes that returned results this run
    actor_restarts_seen: int = 0  # of those, beyond the actor pool's size
    stopped_by: str | None = None  # SIGINT or SIGTERM: the run was stopped before its end

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped_by


class CompressWorker:
    """Ray actor: holds the codec, compresses one shard per call."""

    def __init__(self, codec_id: str, quality: float | None, archive: str, storage: dict,
                 guard: dict, metrics: tuple[str, ...] = (), effort: int | None = None,
                 batching: dict | None = None, device: str = "cpu",
                 effort_for: str = "faithful", effort_max_pixels: float | None = None) -> None:
        use_reserved_cpus()
        keep_freed_memory()  # this actor's process is ours (models/allocator.py)
        # A GPU actor sees its GPU(s) as cuda:0.. (Ray sets CUDA_VISIBLE_DEVICES); the codec's
        # network lives there for the actor's life.
        self.codec = get_codec(codec_id, quality, effort=effort, effort_for=effort_for,
                               effort_max_pixels=effort_max_pixels).to(device)
        self.archive = archive
        self.storage = StorageOptions(**storage)
        self.guard = Guard(**guard)
        self.metrics = tuple(metrics)
        self.batching = Batching(**(batching or {}))

    @shard_task
    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        shard = Shard(task["url"], task["shard"], task["file_name"])
        return encode_shard(shard, self.archive, self.codec, self.storage, self.guard, self.metrics,
                            batching=self.batching)


def _check_same_codec(meta: dict[str, Any], codec, where: str) -> None:
    """An archive never mixes codecs, qualities, or weights under one codec id (a retrained
    model registered under the same id writes streams the old weights cannot decode)."""
    if meta.get("codec") != codec.id or meta.get("quality") != codec.quality:
        raise Refused(
            f"{where} was written with --codec {meta.get('codec')} --quality {meta.get('quality')}; "
            f"refusing to add shards with --codec {codec.id} --quality {codec.quality}. "
            "Use another destination, or the archive's codec and quality."
        )
    if meta.get("weights_sha256") != codec.weights_sha256():
        old, new = meta.get("weights_sha256") or "none", codec.weights_sha256() or "none"
        raise Refused(
            f"{where} was written by codec {codec.id} with weights sha256 {old[:16]}..., and "
            f"{codec.id} here has weights {new[:16]}...; refusing to mix them in one archive. "
            "Use another destination, or the weights the archive was written with."
        )


def _check_same_source(found: ShardFile, shard: Shard) -> None:
    """A finished shard file is skipped only if it was made from this very source: shards are
    named by file name, so another directory's shard-000000.tar would otherwise be taken as
    done and its samples never compressed."""
    before = found.meta.get("source")
    if before is not None and before != shard.url:
        raise Refused(
            f"shard {shard.name} is already in the archive, compressed from {_printable(before)}; "
            f"this run's {shard.name} is {_printable(shard.url)}. Shards are named by file name, "
            "so two sources cannot share one. Compress into another archive, or, if this is the "
            f"same shard moved, delete {found.url} to compress it again."
        )


def _printable(url: str) -> str:
    """A source URL as it may appear in messages: never one that carries credentials."""
    try:
        check_url(url)
    except StorageError:
        return "<a URL with credentials>"
    return url


def totals(shard_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-shard figures. ``mean_bpp`` and ``mean_psnr`` are means per image, as
    rate-distortion papers report them; ``bpp`` is the coded images' bits over their pixels,
    which one tiny image among photos cannot move (its own bpp may be 100 and more)."""
    keys = ("samples", "compressed", "passthrough", "source_bytes", "archive_bytes",
            "image_bytes", "bitstream_bytes", "pixels", "unrefined")
    out: dict[str, Any] = {k: sum(s.get(k, 0) for s in shard_stats) for k in keys}
    out["shards"] = len(shard_stats)
    compressed = out["compressed"]
    psnr_count = sum(s.get("psnr_count", 0) for s in shard_stats)
    out["bpp"] = 8 * out["bitstream_bytes"] / out["pixels"] if out["pixels"] else None
    out["mean_bpp"] = sum(s.get("bpp_sum", 0.0) for s in shard_stats) / compressed if compressed else None
    out["mean_psnr"] = (
        sum(s.get("psnr_sum", 0.0) for s in shard_stats) / psnr_count if psnr_count else None
    )
    out["ratio"] = out["source_bytes"] / out["archive_bytes"] if out["archive_bytes"] else None
    lpips_count = sum(s.get("lpips_count", 0) for s in shard_stats)
    if lpips_count:  # only archives written with --metrics lpips have the figure
        out["mean_lpips"] = sum(s.get("lpips_sum", 0.0) for s in shard_stats) / lpips_count
        out["lpips_count"] = lpips_count  # fewer than compressed: runs without the metric, or
        # images too small for the network
    return out


def _check_metrics(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse unknown metrics, and a metric whose network cannot run here, before any work:
    finding out in every worker, shard after shard, would waste the whole run."""
    try:
        metrics = check_metrics(metrics)
    except ValueError as exc:
        raise Refused(f"--metrics: {exc}") from exc
    if metrics:
        import numpy as np

        a = np.zeros((64, 64, 3), np.uint8)
        b = np.full((64, 64, 3), 128, np.uint8)
        try:
            for name in metrics:
                if perceptual(name, a, b) is None:
                    raise ValueError("it gave no score for a 64x64 image")
        except Exception as exc:
            raise Refused(f"--metrics {','.join(metrics)} cannot run here ({type(exc).__name__}: "
                          f"{exc}); fetch the metric weights with `python -m jobs.fetch_weights`"
                          ) from exc
    return metrics


def _existing_shards(archive: str, storage: StorageOptions) -> list[str]:
    fs, path = filesystem(join(archive, "shards"), storage)
    if not fs.exists(path):
        return []
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return sorted(n[: -len(".parquet")] for n in names if n.endswith(".parquet") and not n.startswith("."))


def _remove_stale_temp_files(archive: str, storage: StorageOptions) -> list[str]:
    """Temp files of attempts that died mid-write (a killed worker or driver): never valid,
    so removed; their count says how many shard attempts were interrupted."""
    return [final.removesuffix(".parquet")
            for final in remove_temp_files(join(archive, "shards"), storage)]


def _plan(shards: list[Shard], archive: str, codec, storage: StorageOptions,
          report: CompressReport, log: Progress,
          redo: Collection[str] = ()) -> tuple[dict, dict, list[str], dict]:
    """Every shard file already in the archive must match this codec (an archive never mixes
    two); finished files of this run's shards are skipped, missing or unreadable ones (re)done,
    and so are the ones named in ``redo`` (damage inside a file's pages is found only by
    reading every row: ``verify`` names such shards).

    Returns (finished files of this run's shards, finished files of other shards, shards whose
    earlier attempt died mid-write, the finished files ``redo`` named: to be replaced).
    """
    interrupted = _remove_stale_temp_files(archive, storage)
    finished: dict[str, ShardFile] = {}
    others: dict[str, ShardFile] = {}
    replaced: dict[str, ShardFile] = {}
    invalid: dict[str, str] = {}
    wanted = {s.name for s in shards}
    names = _existing_shards(archive, storage)
    try:  # footers only, several at once (on an object store each is a round trip)
        checked = per_file(lambda name: validate_shard_file(archive, name, storage), names)
    except FormatError as exc:
        raise Refused(str(exc)) from exc
    for name, (found, reason) in zip(names, checked, strict=True):
        if found is None:
            invalid[name] = reason
            continue
        _check_same_codec(found.meta, codec, found.url)
        (finished if name in wanted else others)[name] = found
    for shard in shards:
        if shard.name in finished:
            _check_same_source(finished[shard.name], shard)
            if shard.name in redo:  # its file is replaced only once the new one is written
                replaced[shard.name] = finished.pop(shard.name)
                report.redone[shard.name] = "to be replaced (--redo)"
            else:
                report.skipped.append(shard.name)
        elif shard.name in invalid:
            report.redone[shard.name] = invalid[shard.name]
    for name in sorted(set(invalid) - wanted):
        # Not this run's to redo, and not to be dropped from the manifest without a word.
        report.failed[name] = (f"shard {name}: its file is {invalid[name]}, and its source is not "
                               "among this run's: compress again with that source to redo it, "
                               "or delete the file to leave the shard out")
        log.note(f"FAILED {report.failed[name]}")
    return finished, others, interrupted, replaced


def compress(
    sources: list[str] | str,
    archive: str,
    codec_id: str = DEFAULT_CODEC,
    quality: float | None = None,
    storage: StorageOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: bool = True,
    guard: Guard | None = None,
    metrics: tuple[str, ...] | list[str] = (),
    effort: int | None = None,
    batching: Batching | None = None,
    effort_for: str = "faithful",
    effort_max_pixels: float | None = None,
    redo: Collection[str] = (),
) -> CompressReport:
    """Compress WebDataset shards into ``archive``; see the module docstring for resume rules.

    ``redo``: shards of this run to compress again even where their file is finished (e.g.
    the ones ``verify`` found damaged); each file is replaced only when its new one is written.

    ``metrics``: extra per-row metrics beside PSNR, e.g. ``("lpips",)`` (a network forward per
    image; needs the weights from ``python -m jobs.fetch_weights``). ``effort``: encode-time
    optimisation steps for codecs that take them (gan-latent, hyperprior codecs); it changes
    only how well the encoder fits, never how a stream decodes, so a resumed archive may use
    another effort. ``effort_for``: the decoder a hyperprior codec's refinement aims at
    (``models.refine``: "realistic" suits the streams to that decoder; both still read them).
    ``effort_max_pixels``: larger images are coded unrefined (default: the workers' device's,
    ``models.refine.max_refined_pixels``: 16 MP on a CPU, none on a GPU; ``math.inf``: none),
    and counted as ``unrefined``.
    ``batching``: samples and decoded pixels per codec batch; bounds left at 0 get the
    defaults (``shard_encode.Batching``). It groups work; rows do not depend on it,
    except that a learned codec on a GPU may round g_a's floats differently in another batch
    (measured: 16 bytes apart over 96 Kodak streams), and every such stream decodes exactly.

    Raises ``Refused`` (nothing changed) for unusable arguments; shard failures are reported in
    the returned ``CompressReport`` (``ok`` is False) and in ``_stats.json``.
    """
    if isinstance(sources, str):  # one URL, not a list of one-letter ones
        sources = [sources]
    storage = storage or StorageOptions()
    ray_options = ray_options or RayOptions()
    started = time.monotonic()
    try:
        codec = get_codec(codec_id, quality, effort=effort, effort_for=effort_for,
                          effort_max_pixels=effort_max_pixels)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    metrics = _check_metrics(tuple(metrics))
    archive = archive.rstrip("/")
    try:
        shards = expand_sources(sources, storage)
    except (ValueError, OSError) as exc:
        raise Refused(f"cannot list the shards of {' '.join(map(_printable, sources))}: {exc}") from exc
    # after the sources: with wrong credentials, listing them says so first
    fs, path = filesystem(archive, storage)
    if fs.isfile(path):  # e.g. `compress src/*.tar` with ARCHIVE left out: the last tar
        last = (" (was ARCHIVE left out, so that the last SRC was taken for it?)"
                if archive.endswith(".tar") else "")
        raise Refused(f"ARCHIVE {archive} is a file, not a directory or prefix{last}")
    try:  # one listing (a request on a store); a new archive has nothing to list
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    except FileNotFoundError:
        names = set()
    # `compress dirA dirB` with ARCHIVE left out: dirB, a source, taken for it
    if any(n.endswith(".tar") for n in names) and not names & {MANIFEST, STATS, "shards"}:
        raise Refused(f"ARCHIVE {archive} holds .tar shards and no archive: was ARCHIVE "
                      "left out, so that the last SRC was taken for it? (an archive is "
                      "written to a directory or prefix of its own)")

    manifest_url = join(archive, MANIFEST)
    manifest = None
    if exists(manifest_url, storage):
        manifest = read_json(manifest_url, storage)
        try:  # an archive of another format version is not ours to add to (or rewrite)
            check_version(manifest, manifest_url)
        except FormatError as exc:
            raise Refused(str(exc)) from exc
        _check_same_codec(manifest, codec, archive)
    listed_before = _listed_before(archive, storage, manifest)
    report = CompressReport(archive, codec.id, codec.quality, [s.name for s in shards])
    log = Progress("compress", len(shards), progress)
    if isinstance(redo, str):  # one name, not its characters
        redo = [redo]
    if unknown := sorted(set(redo) - {s.name for s in shards}):
        raise Refused(f"--redo names shard(s) {', '.join(unknown)} that are not among this "
                      "run's sources (give SRC for them too; names are without .tar)")

    finished, others, interrupted_before, replaced = _plan(shards, archive, codec, storage,
                                                           report, log, set(redo))
    for shard in shards:  # listed by the manifest, yet gone: said, as a damaged one is
        if shard.name in listed_before and shard.name not in finished and shard.name not in report.redone:
            report.redone[shard.name] = f"missing ({MANIFEST} listed it)"
    if report.skipped:
        shown = report.skipped[:SKIPPED_SHOWN]  # every name made one line of 56 kB at 4,000 shards
        more = f" and {len(report.skipped) - len(shown)} more" if len(report.skipped) > len(shown) else ""
        log.note(f"skipping {len(report.skipped)} finished shard(s): {', '.join(shown)}{more} "
                 f"({STATS} lists them)")
    for name, reason in report.redone.items():
        log.note(f"redoing shard {name}: its file is {reason}")
    todo = [s for s in shards if s.name not in finished]
    if todo:
        ray_options = resolve(ray_options, uses_gpu(codec.id))
        check_fits(ray_options)  # a refusal leaves the archive as it was
        log.note(describe(ray_options))
    if todo or report.failed:  # a damaged file of another run's shard leaves it incomplete too
        remove(manifest_url, storage)  # the archive is incomplete until this run finishes
    log.total = len(todo)
    tasks = [{"shard": s.name, "url": s.url, "file_name": s.file_name} for s in todo]
    results: dict[str, dict[str, Any]] = {}
    workers: set[tuple] = set()
    batching = batching or Batching()
    device = worker_device(ray_options)
    # hyperprior codecs: the refinement's pass size and size limit where the workers run
    limits = codec.refine_limits(device) if hasattr(codec, "refine_limits") else None
    skip_above = limits[1] if limits else math.inf
    worker_args = (codec.id, codec.quality, archive, asdict(storage), asdict(guard or Guard()),
                   metrics, effort, asdict(batching), device, effort_for, effort_max_pixels)
    try:
        for result in run_per_shard(CompressWorker, worker_args, tasks, ray_options,
                                    on_start=log.start):
            if result.get("pid") is not None:  # not the runner's own "worker died" results
                workers.add((result.get("node"), result["pid"]))
            name = result["shard"]
            if result["ok"]:
                results[name] = result
                report.done.append(name)
                log.update(name, result["samples"], result["source_bytes"],
                           result["archive_bytes"])
            else:
                report.failed[name] = result["error"]
                log.update(name, error=result["error"])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (pipeline/interrupt.py): the actors are gone
        report.stopped_by = interrupt.name()
    earlier = {n: f.meta for n, f in {**others, **finished}.items()}  # files kept from before
    if report.stopped_by:
        # What was finished is kept and recorded; the shards in flight left temp files, which
        # the next run removes and counts (_plan), as after a crash. A shard can also finish
        # between the signal and its worker's end (Ray checks for signals about once a
        # second): its result never came back, but its file is whole; counted from the file.
        with interrupt.shielded():  # a second Ctrl-C must not leave the last run's record
            present = set(_existing_shards(archive, storage))
            for shard in todo:
                if shard.name not in results and shard.name in present:
                    found, _ = validate_shard_file(archive, shard.name, storage)
                    # --redo: the file it had before may still be there; counted as this
                    # run's only where it is told apart (by its identity) as a new one
                    old = replaced.get(shard.name)
                    if found is not None and (old is None or None not in (
                            old.identity, found.identity) and found.identity != old.identity):
                        results[shard.name] = found.meta
                        report.done.append(shard.name)
            report.interrupted = sorted(interrupted_before)
            _write_stats(archive, storage, report, codec, metrics, effort, limits, skip_above,
                         earlier, results, started, listed_before)
        left = len(todo) - len(report.done)
        n_failed = len({s.name for s in todo} & set(report.failed))  # not other sources' files
        failed = f" ({n_failed} of them failed)" if n_failed else ""
        raise interrupt.Interrupted(
            f"stopped by {report.stopped_by}: {len(report.done)} shard(s) finished in this run "
            f"are kept in {archive}, {left} not done{failed}; rerun the same command to "
            "compress them")
    if todo:
        # Worker processes that returned a result, beyond the pool's size: actors that Ray
        # restarted (a lower bound: a replacement that got no shard is not seen).
        report.worker_processes = len(workers)
        report.actor_restarts_seen = max(0, len(workers) - default_actors(ray_options, len(todo)))
    # Attempts that died during this run (Ray restarted the actor and retried the shard).
    report.interrupted = sorted(interrupted_before + _remove_stale_temp_files(archive, storage))
    unrefined = sum(r.get("unrefined", 0) for r in results.values())
    if unrefined:  # --effort was asked for; say where it was not spent
        log.note(f"{unrefined} image(s) above {skip_above / 1e6:g} MP were coded "
                 f"without --effort {codec.effort} (--effort-max-mp)")
    for shard in todo:  # a result that never came back is a failure too, never a silent gap
        if shard.name not in results and shard.name not in report.failed:
            report.failed[shard.name] = "no result returned by the worker"

    # The archive as it is now, not as it was when this run started: another compress run into
    # it (a second `ray job submit` with other shards) may have finished shards meanwhile, and
    # the manifest written last must list them too. Listed again after the manifest is written,
    # until nothing changed in between: whichever run writes last, writes all.
    wanted, wrote = {s.name for s in shards}, False
    for _ in range(FINISH_ROUNDS):
        present = set(_existing_shards(archive, storage))
        conflict = _take_in(archive, storage, codec, present, earlier, results, wanted,
                            listed_before, report, log)
        complete = report.ok
        per_shard = _write_stats(archive, storage, report, codec, metrics, effort, limits,
                                 skip_above, earlier, results, started,
                                 None if complete else listed_before)
        if not complete:
            if conflict or wrote:  # another run's manifest, or ours of a round before: not whole
                remove(manifest_url, storage)
            break
        _index(archive, sorted(per_shard), storage, log)
        write_json(
            manifest_url,
            {
                **codec_meta(codec),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "shards": [
                    {"shard": n, "source_file": s["source_file"], "samples": s["samples"]}
                    for n, s in per_shard.items()
                ],
                "totals": report.totals,
            },
            storage,
        )
        wrote = True
        if set(_existing_shards(archive, storage)) == present:
            break
    return report


# Finished shards that a resumed run names in its "skipping" line.
SKIPPED_SHOWN = 10

# Rounds of "list the shard files, write the manifest, list again" at the end of a run (see
# compress); more than two only while other runs keep finishing shards.
FINISH_ROUNDS = 5
# From this many shard files, compress says that it builds the index and what it took: at
# millions of rows it reads every key column and sorts on disk, minutes after the last shard
INDEX_NOTE_SHARDS = 100


def _index(archive: str, shards: list[str], storage: StorageOptions, log: Progress) -> None:
    """write_index, said on the log for a large archive (not silence after the last shard)."""
    if len(shards) >= INDEX_NOTE_SHARDS:
        log.note(f"indexing the keys of {len(shards)} shard files into {INDEX}")
    started = time.monotonic()
    rows = write_index(archive, shards, storage)
    if len(shards) >= INDEX_NOTE_SHARDS:
        log.note(f"{INDEX}: {rows} keys, in {time.monotonic() - started:.1f} s")


def _listed_before(archive: str, storage: StorageOptions, manifest: dict[str, Any] | None) -> set[str]:
    """The shards that the archive's last manifest listed: its own, or, when a run removed it
    (it does while it works) and did not finish, the list that run kept in ``_stats.json``.
    A shard among them whose file goes missing is a failure, not dropped without a word."""
    if manifest is not None:
        return {e["shard"] for e in manifest.get("shards", []) if isinstance(e, dict)}
    url = join(archive, STATS)
    if not exists(url, storage):
        return set()
    try:
        stats = read_json(url, storage)
    except FormatError:
        return set()
    listed = stats.get("listed")  # written since session 26; before, the archive's shards
    return set(listed if isinstance(listed, list) else stats.get("shards", {}))


def _take_in(archive: str, storage: StorageOptions, codec, present: set[str],
             earlier: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]],
             wanted: set[str], listed_before: set[str], report: CompressReport,
             log: Progress) -> bool:
    """Bring ``earlier`` (the shard files this run did not write) up to the files ``present``
    now; what cannot be taken in is a failure. Returns whether a file of another codec, quality
    or weights appeared (a concurrent run with other settings)."""
    conflict = False
    names = sorted(present - set(earlier) - set(results) - set(report.failed))
    for name, (found, reason) in zip(
            names, per_file(lambda name: validate_shard_file(archive, name, storage), names),
            strict=True):
        if found is None:
            report.failed[name] = (f"shard {name}: its file, written during this run by another "
                                   f"compress run, is {reason}")
            continue
        try:
            _check_same_codec(found.meta, codec, found.url)
        except Refused as exc:
            conflict = True
            report.failed[name] = (f"shard {name}: written during this run by another compress "
                                   f"run with other settings, so the archive mixes them: {exc}")
            continue
        earlier[name] = found.meta
        log.note(f"shard {name}: finished during this run by another compress run; taken in")
    for name in sorted(set(earlier) - present):
        del earlier[name]
        report.failed[name] = (f"shard {name}: its file was in the archive when this run "
                               "started and is gone; compress again with its source to redo it")
    for name in sorted(listed_before - present - wanted - set(report.failed)):
        report.failed[name] = (f"shard {name}: {MANIFEST} listed it, but its file is missing; "
                               "compress again with its source to redo it")
    return conflict


def _write_stats(archive: str, storage: StorageOptions, report: CompressReport, codec: Any,
                 metrics: tuple[str, ...], effort: int | None, limits: tuple | None,
                 skip_above: float, earlier: dict[str, dict[str, Any]],
                 results: dict[str, dict[str, Any]], started: float,
                 listed: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write ``_stats.json``: this run's record and the figures of every shard in the archive
    (``earlier``: the skipped ones' and any older ones', from their files; ``results``: this
    run's). Returns the per-shard figures. Also sets ``report.totals`` and ``report.seconds``.
    ``listed``: the shards the last manifest listed (``_listed_before``), kept for the next run
    when this one writes none; None: this run writes the manifest, of the shards here."""
    shard_stats = {**earlier, **results}
    per_shard = {n: _public_stats(s) for n, s in sorted(shard_stats.items())}
    report.totals = totals(list(per_shard.values()))
    report.seconds = round(time.monotonic() - started, 3)
    write_json(
        join(archive, STATS),
        {
            "run": {
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": report.seconds,
                "codec": codec.id,
                "quality": codec.quality,
                "metrics": list(metrics),
                "effort": getattr(codec, "effort", effort),
                # hyperprior codecs: which decoder the refinement aimed at, above which size
                # (padded pixels) images were refined tile by tile, and above which (pixels;
                # null: none) they were coded unrefined
                **({"effort_for": codec.effort_for,
                    "refine_tile_above_pixels": limits[0],
                    "refine_skip_above_pixels": None if math.isinf(skip_above) else skip_above}
                   if limits else {}),
                "done": report.done,
                "skipped": report.skipped,
                "redone": report.redone,
                "failed": report.failed,
                "interrupted_attempts": report.interrupted,
                "worker_processes": report.worker_processes,
                "actor_restarts_seen": report.actor_restarts_seen,
                # SIGINT/SIGTERM: the run was stopped; "done" is what it finished before that
                **({"stopped_by": report.stopped_by} if report.stopped_by else {}),
            },
            "totals": report.totals,
            "shards": per_shard,
            "listed": sorted(per_shard if listed is None else listed),
        },
        storage,
    )
    return per_shard


_PUBLIC = ("shard", "source", "source_file", "samples", "compressed", "passthrough",
           "source_bytes", "archive_bytes", "image_bytes", "bitstream_bytes", "pixels",
           "bpp_sum", "psnr_sum", "psnr_count", "lpips_sum", "lpips_count", "unrefined",
           "passthrough_reasons",
           "seconds", "node")


def _public_stats(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in _PUBLIC if k in meta}
