"""``verify``: decode every row of an archive and compare with what was stored at encode time.

Checks, per row: CRC32C, bitstream framing, decode, content hash, shape; per passthrough row:
the sha256 of the stored original. Per archive: every shard in the manifest has a readable
file with the row count it claims, and ``_index.parquet`` (what ``Archive.get`` looks keys up
in) lists each shard's keys and row groups as its file has them. Each problem names shard and key.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import interrupt
from pipeline.archive import index_digest, index_digests, shard_index_entries
from pipeline.archive_format import (
    INDEX,
    FormatError,
    open_shard_file,
    read_manifest,
    validate_shard_file,
)
from pipeline.errors import Refused
from pipeline.progress import Progress
from pipeline.rows import RowDecoder, RowError, iter_rows
from pipeline.runner import RayOptions, run_per_shard, shard_task, use_reserved_cpus
from pipeline.storage import StorageOptions

MAX_PROBLEMS_PER_SHARD = 100


@dataclass
class VerifyReport:
    archive: str
    shards: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # shards whose file has a problem of its own (not the index's): `compress --redo` remakes them
    damaged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shard(archive: str, shard: str, expected_rows: int, storage: StorageOptions,
                 decoder: RowDecoder | None = None) -> dict[str, Any]:
    decoder = decoder or RowDecoder()
    found, reason = validate_shard_file(archive, shard, storage)
    if found is None:
        return {"shard": shard, "rows": 0, "problems": [f"shard {shard}: file is {reason}"]}
    problems: list[str] = []
    rows = 0
    key = None
    try:
        for row in iter_rows(archive, shard, storage):
            rows += 1
            key = row["key"]
            try:
                decoder.check(row)
            except RowError as exc:
                if len(problems) < MAX_PROBLEMS_PER_SHARD:
                    problems.append(str(exc))
    except Exception as exc:  # the file itself (a damaged page): no later row can be read
        where = f"after key {key!r}" if key is not None else "before its first row"
        problems.append(f"shard {shard}: unreadable {where} ({rows} of {expected_rows} rows "
                        f"read): {type(exc).__name__}: {exc}")
    else:  # read to its end: a count that differs is a problem of its own (said once, not twice)
        if rows != expected_rows:
            problems.append(f"shard {shard}: has {rows} rows, the manifest says {expected_rows}")
    try:  # what _index.parquet should say about this shard (verify compares)
        f, parquet = open_shard_file(archive, shard, storage)
        with f:
            digest: str | None = index_digest(shard_index_entries(parquet))
    except Exception:  # an unreadable file is already a problem above
        digest = None
    return {"shard": shard, "rows": rows, "problems": problems, "index_digest": digest}


class VerifyWorker:
    def __init__(self, archive: str, storage: dict) -> None:
        use_reserved_cpus()
        self.archive = archive
        self.storage = StorageOptions(**storage)
        self.decoder = RowDecoder()

    @shard_task
    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        return verify_shard(self.archive, task["shard"], task["samples"], self.storage,
                            self.decoder)


def verify(
    archive: str,
    storage: StorageOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: bool = True,
) -> VerifyReport:
    storage = storage or StorageOptions()
    started = time.monotonic()
    archive = archive.rstrip("/")
    try:
        manifest = read_manifest(archive, storage)
    except (FormatError, OSError) as exc:
        raise Refused(str(exc)) from exc
    tasks = [{"shard": e["shard"], "samples": e["samples"]} for e in manifest["shards"]]
    report = VerifyReport(archive, shards=len(tasks))
    log = Progress("verify", len(tasks), progress)
    seen: set[str] = set()
    digests: dict[str, str | None] = {}
    try:
        for result in run_per_shard(VerifyWorker, (archive, asdict(storage)), tasks,
                                    ray_options or RayOptions(), on_start=log.start):
            seen.add(result["shard"])
            if result["ok"]:
                report.rows += result["rows"]
                digests[result["shard"]] = result.get("index_digest")
                report.problems.extend(result["problems"])
                if result["problems"]:
                    report.damaged.append(result["shard"])
                log.update(result["shard"], result["rows"],
                           error="; ".join(result["problems"][:1]) or None)
            else:
                report.problems.append(result["error"])  # runner's errors name the shard
                report.damaged.append(result["shard"])  # its file may be why its worker died
                log.update(result["shard"], error=result["error"])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (pipeline/interrupt.py): nothing to undo
        raise interrupt.Interrupted(
            f"stopped by {interrupt.name()}: {len(seen)} of {len(tasks)} shard(s) checked, "
            f"{report.rows} rows, {len(report.problems)} problem(s) so far; "
            "verify changes nothing, so rerun it to check everything") from None
    report.problems.extend(
        f"shard {t['shard']}: no result returned by the worker" for t in tasks if t["shard"] not in seen
    )
    report.problems.extend(_index_problems(archive, storage, digests, {t["shard"] for t in tasks}))
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _index_problems(archive: str, storage: StorageOptions,
                    digests: dict[str, str | None], shards: set[str]) -> list[str]:
    """``_index.parquet`` against the shard files: ``Archive.get`` finds keys through it, so a
    stale or damaged index would miss keys or send a lookup to the wrong row group."""
    try:
        indexed = index_digests(archive, storage)
    except (FormatError, OSError) as exc:
        return [f"{INDEX}: {exc}"]
    empty = index_digest([])
    stale = sorted(s for s, d in digests.items() if d is not None and indexed.get(s, empty) != d)
    problems = [f"shard {s}: {INDEX} does not list this shard's keys and row groups as its file "
                "has them (a stale or damaged index: Archive.get would miss or misread keys); "
                "rerun the compress command to rebuild it" for s in stale]
    if extra := sorted(set(indexed) - shards):
        # a compress run that added shards while this verify ran rewrote the manifest as well:
        # those are the archive's now (unchecked by this run), not the index's mistake
        try:
            now = {e["shard"] for e in read_manifest(archive, storage)["shards"]}
        except (FormatError, OSError):
            now = set()
        if extra := [s for s in extra if s not in now]:
            problems.append(f"{INDEX} lists shard(s) the archive does not have: {', '.join(extra)}")
    return problems
